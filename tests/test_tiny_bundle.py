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


def test_tiny_vae_downsamples_8x_like_sds(tiny_bundle):
    """SD's VAE structure (4 blocks, 3 downsampling): a 512 px photo gives 64x64 latents, not 256x256 (which made
    `emogen edit photo.jpg` on the demo models attend over 65,536 tokens for minutes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(str(tiny_bundle / "vae"))
    assert len(vae.config.block_out_channels) == 4 and vae.config.block_out_channels[-1] == vae.config.block_out_channels[-2]
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 48)).latent_dist.mean
        assert latents.shape == (1, 4, 8, 6)
        assert vae.decode(latents).sample.shape == (1, 3, 64, 48)
    unet = UNet2DConditionModel.from_pretrained(str(tiny_bundle / "unet"))
    assert unet.config.sample_size * 8 == 16  # the tiny resolution, in latents
