"""HTTP routers: thin, each calls one service function."""
