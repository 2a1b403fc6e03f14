"""Services that change rollouts state: one module per concern."""
