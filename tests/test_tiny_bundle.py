import torch


def test_tiny_bundle_round_trips_through_from_pretrained(tiny_bundle):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer, ResNetModel

    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_bundle / part).is_dir()
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_bundle), safety_checker=None)
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_bundle / "tokenizer"))
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a cup", return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, -1] == tokenizer.eos_token_id
    clip = CLIPModel.from_pretrained(str(tiny_bundle / "clip"))
    # SD's text encoder is CLIP's text tower, as in SD 1.5 / CLIP ViT-L/14.
    for name, value in pipe.text_encoder.state_dict().items():
        assert torch.equal(value, clip.text_model.state_dict()[name])
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    image = pipe("a cup", num_inference_steps=2, height=16, width=16, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3)
    resnet = ResNetModel.from_pretrained(str(tiny_bundle / "resnet"))
    assert resnet(torch.zeros(1, 3, 32, 32)).pooler_output.shape == (1, 32, 1, 1)
