"""The gateway side: the forced command's session, device discovery, client identity,
bridges, hooks."""
