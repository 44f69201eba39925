"""Result tables and plots for docs/results/: quality (PPL, KLD) per type, mix and allocation."""
