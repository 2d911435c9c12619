"""Detection inference: generate with a rollout backend, parse strictly, write gt_vs_pred.jsonl."""
