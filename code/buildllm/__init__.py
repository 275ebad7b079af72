"""buildllm: the library that the book *Build a Large Language Model from Scratch* builds.

One module per concept, each explained by one chapter:

========================  ==========================================
module                    chapter
========================  ==========================================
``buildllm.data``         Preface (corpus), Training (batches)
``buildllm.repro``        every chapter's first cell
``buildllm.tokenizer``    Tokens
``buildllm.embeddings``   Embeddings and positional encoding
``buildllm.attention``    Attention
``buildllm.layers``       The GPT model
``buildllm.model``        The GPT model
``buildllm.train``        Training on a CPU
``buildllm.generate``     Generating text
``buildllm.cli``          How this book is built (the command line)
========================  ==========================================
"""

__version__ = "0.1.0"
