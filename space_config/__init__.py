"""The Hugging Face Space of this project, declared: its card (`card.py`) and its deploy command.

    python -m space_config.deploy --dry-run                     # the file list and the card, offline
    python -m space_config.deploy --space-id <user>/fashion-mnist-explainer
"""
