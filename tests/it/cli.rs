//! CLI behaviour: help, exit codes, generated files.
