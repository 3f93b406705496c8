"""The data contracts: tables, columns, types and the rules every landed row must meet."""
