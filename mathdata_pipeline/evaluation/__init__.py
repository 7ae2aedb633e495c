"""Does a mixture make a better model? Supervised fine-tuning on a mixture (`sft_model`), scores
on the benchmarks (`benchmark_scores`) and paired comparisons of mixtures (`mixture_comparison`)."""
