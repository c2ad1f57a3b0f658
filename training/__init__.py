"""cpllm_plugin.training"""
