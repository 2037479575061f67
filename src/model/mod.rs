//! Models: the `config.json` schema, the compact CNN, InceptionResnetV1, and save/load.
