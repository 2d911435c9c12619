"""The Accelerate-driven training loop shared by every stage (see `trainer.Trainer`)."""
