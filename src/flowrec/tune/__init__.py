"""Fine-tuning of the LLM recommender: BIGRec, IFairLRS and Flower (one loop, method.md sections 4-5)."""
