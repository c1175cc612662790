"""The coordinator: the self-play iteration loop and adapter rollout to every replica."""
