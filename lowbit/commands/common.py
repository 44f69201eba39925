"""Options shared by several subcommands."""
from ..sampling import SamplingParams


def add_sampling_args(p):
    g = p.add_argument_group("sampling (defaults: the model's generation_config, else llama.cpp's)")
    g.add_argument("--temperature", "--temp", type=float, help="0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 = off (default 40)")
    g.add_argument("--top-p", type=float, help="nucleus sampling threshold (default 0.95)")
    g.add_argument("--min-p", type=float, help="drop tokens below min_p x the top probability (default 0.05)")
    g.add_argument("--repeat-penalty", dest="repetition_penalty", type=float, help="penalize repeated tokens (default 1.0 = off)")
    g.add_argument("--presence-penalty", type=float, help="subtract from every token seen (default 0)")
    g.add_argument("--repeat-last-n", type=int, help="how many recent tokens the penalties consider (default 64, 0 = all)")
    g.add_argument("--seed", type=int, help="random seed: the same seed gives the same output")


def sampling_overrides(args) -> dict:
    return {k: getattr(args, k, None) for k in SamplingParams.names() if getattr(args, k, None) is not None}
