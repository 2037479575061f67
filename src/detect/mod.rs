//! Face detection and alignment (MTCNN). The port is written and tested on the `mtcnn` branch
//! (see `wip/README.md`) and is wired in next; until then `--detect` is refused with a message.
