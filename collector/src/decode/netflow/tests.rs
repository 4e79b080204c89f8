//! Unit tests of the NetFlow decoder: hand-built datagrams, one comment per field.
