//! `walship`: the daemon, its configuration, HTTP and binary client APIs, and the CLI.
