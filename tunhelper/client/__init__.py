"""The client side: tunhelper connect and its background mode."""
