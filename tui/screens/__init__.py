"""One module per tab of the app: generate, data, train, export."""
