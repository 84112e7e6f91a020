"""DeepSpeed pre-training of the Llama model on packed token shards (`gptnl train`)."""
