"""One module per channel beyond email (DESIGN §12): rules, renderer and sender."""
