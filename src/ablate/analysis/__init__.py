"""Statistics over finished trials: paired effects over seeds (`effects`), importances, the Pareto front."""
