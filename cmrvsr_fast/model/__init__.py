"""The reference network and what describes it: configurations and presets (config), the network and its loss
(network), checkpoints (checkpoint), arithmetic cost (cost), and every comparison model by name (zoo, baselines)."""
