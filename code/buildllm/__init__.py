"""buildllm: the library that the book *Build a Large Language Model from Scratch* builds.

One module per concept, each explained by one chapter. Modules import one way, from the bottom
of this table up: a module uses only modules listed above it.

============================  ================================================================
module                        chapter
============================  ================================================================
``buildllm.files``            Tokens (writing a file atomically)
``buildllm.repro``            Preface (every chapter's first cell; timings that repeat)
``buildllm.config``           The GPT model (GPTConfig, presets); Training on a CPU (recipes)
``buildllm.bpe``              Tokens (the algorithm, to read)
``buildllm.bpe_fast``         Tokens (the same merges and ids, fast)
``buildllm.tokenizer``        Tokens (CharTokenizer, BPETokenizer)
``buildllm.tokenizer_export`` Tokens (to tiktoken and Hugging Face)
``buildllm.data``             Preface (corpus), Training on a CPU (batches, a run's data)
``buildllm.embeddings``       Embeddings and positional encoding
``buildllm.norms``            The GPT model (LayerNorm); From GPT-2 to today's LLMs (RMSNorm)
``buildllm.attention``        Attention
``buildllm.kvcache``          Generating text (the key/value cache)
``buildllm.gqa``              From GPT-2 to today's LLMs (GQA, RoPE, QK-norm in attention)
``buildllm.layers``           The GPT model (feed-forward, block); From GPT-2 ... (SwiGLU)
``buildllm.model``            The GPT model
``buildllm.device``           Training on a CPU (choosing a device)
``buildllm.checkpoint``       Training on a CPU (saving and loading)
``buildllm.convert``          The GPT model (Hugging Face GPT-2 import and export)
``buildllm.muon``             From GPT-2 to today's LLMs (the Muon optimizer)
``buildllm.run``              Training on a CPU (a run's log, processes, save and resume)
``buildllm.train``            Training on a CPU
``buildllm.pretrained``       Training on a CPU (the book's model, cached)
``buildllm.generate``         Generating text
``buildllm.quantize``         Generating text (int8 weights)
``buildllm.plays``            Fine-tuning (the data: Shakespeare's plays)
``buildllm.adapters``         Fine-tuning (an adapter folder on disk)
``buildllm.lora``             Fine-tuning (LoRA)
``buildllm.finetune``         Fine-tuning (a classifier)
``buildllm.baselines``        Fine-tuning (what a classifier must beat)
``buildllm.instruct``         Fine-tuning (instruction tuning)
``buildllm.cli``              How this book is built and tested (the command line)
============================  ================================================================
"""

__version__ = "0.2.0"
