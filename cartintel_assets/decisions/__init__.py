"""Which carts to act on and with what: the catalogue, economics, the plan and its evaluation."""
