"""cpllm_plugin.integrations"""
