"""The conformance suites: one module per spec section, each test tagged with the clauses it proves."""
