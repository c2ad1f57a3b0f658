"""cpllm_plugin.export"""
