"""The lesson-free report engine: runs (discovery, loading), cells (values and markers), select (which runs a table
shows), shapes (the handout's layouts), notes, render, engine (Table, Lesson, build_tables), figures."""
