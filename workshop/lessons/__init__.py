"""The lessons, in the order the workshop teaches them: each module holds its tables (as data where it can) and
its figures. `LESSONS` is the registry fill_tables, the notebooks and the tests read instead of their own lists."""

from workshop.lessons import baseline, deepspeed_multi_gpu, deepspeed_single_gpu, make_it_fast

LESSONS = (baseline.LESSON, deepspeed_single_gpu.LESSON, deepspeed_multi_gpu.LESSON, make_it_fast.LESSON)
BY_NAME = {lesson.name: lesson for lesson in LESSONS}
