"""learnviz inside other tools: `learnviz.integrations.hf.LearnvizCallback` for the transformers
Trainer (docs/integrations.md)."""
