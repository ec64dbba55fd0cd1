"""What neuralcpu, symbolic_ram and bridge share: the fact triple, answer matching, relation files and
the tool-call format. It imports none of them (and nothing heavier than PyYAML)."""
