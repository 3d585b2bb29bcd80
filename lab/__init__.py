"""The lab around the network elements: UE and core simulators, topologies, the demo, the CLI."""
