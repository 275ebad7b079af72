"""Every option of GPTConfig that touches the forward pass, alone and all together.

Shared by the tests of generation (cached == uncached for each) and of the modern options.
"""

OPTIONS: dict[str, dict] = {
    "gpt2": {},
    "sinusoidal": dict(pos_encoding="sinusoidal"),
    "rope": dict(pos_encoding="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "relu": dict(mlp="relu"),
    "swiglu": dict(mlp="swiglu"),
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "qk_norm": dict(qk_norm=True),
    "untied": dict(tie_weights=False),
    "no_bias": dict(bias=False),
    "all": dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=True,
                tie_weights=False, bias=False),
}
