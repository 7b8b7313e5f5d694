"""Training: config, model/optimiser building, the loop and its parts, the demo."""
