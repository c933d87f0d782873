"""The local development stack: demo OpenBao set-up and the `make run` supervisor."""
