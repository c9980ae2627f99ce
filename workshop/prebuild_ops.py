"""`python -m workshop.prebuild_ops`, the user command; the code is workshop/deepspeed/ops.py (see there)."""
from workshop.deepspeed.ops import main

if __name__ == "__main__":
    main()
