"""`python -m workshop.estimate`, the user command; the code is workshop/deepspeed/estimate.py (see there)."""
from workshop.deepspeed.estimate import (BLOOM_VOCAB, GIB, MODELS, bloom_params, bloom_shape,  # noqa: F401
                                         cached_estimate_table, estimate_table, main, param_counts)

if __name__ == "__main__":
    main()
