"""Pure domain: models, states, commands, errors and the decision engine. No I/O here."""
