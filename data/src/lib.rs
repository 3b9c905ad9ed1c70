//! The SFT data pipeline without a tensor library: tokenizer, chat templates, chat data, loss masks, caches and the exact-batch packer.
