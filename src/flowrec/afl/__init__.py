"""AFL: the agentic feedback loop between a recommendation agent and a user agent (docs/method.md section 9).

candidates (candidate lists and user-simulation pairs), agents (prompt templates, memory, parsing),
loop (the feedback loop over a batch of users), backends (the LLM behind one interface: local
transformers with trie-constrained answers, or an OpenAI-compatible endpoint), cache (content-addressed
call cache), metrics (HR@1, precision/recall/F1), recmodels (GRU4Rec and Caser in RecBole).
"""
