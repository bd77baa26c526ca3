"""The pages of the dashboard, one module each: ``render(ctx)`` draws the page."""
