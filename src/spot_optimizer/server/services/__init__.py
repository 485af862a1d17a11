"""Server logic. Routers call one function here each; every query of the control plane lives here."""
