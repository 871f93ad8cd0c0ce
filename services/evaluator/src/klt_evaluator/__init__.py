"""klt evaluator: queries metric providers and runs evaluations and analyses."""
