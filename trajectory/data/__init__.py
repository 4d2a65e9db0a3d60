"""Layer 1, data: the evaluation windows and their hash (:mod:`.tokens`), the embedded corpus and its BPE
(:mod:`.corpus`), and the twin's training tokens (:mod:`.traindata`, from text, Pythia's Megatron shards
(:mod:`.shards`) or those shards' rows streamed from the Hub (:mod:`.hubshards`)).
"""
