"""``patch_critic2d``: the 2D PatchGAN critic of ``MedSRLib.nn.nets.cyclegan`` by name, for ``networks.critic`` of the
2D recipes. MedSRLib defines the class but does not register it (a critic never goes into a MedSR checkpoint), so the
name is registered here unless MedSRLib already does."""
from MedSRLib.nn.nets.cyclegan import PatchDiscriminator
from MedSRLib.nn.registry import architecture_names, register_architecture

CRITIC_2D = "patch_critic2d"

if CRITIC_2D not in architecture_names():
    register_architecture(CRITIC_2D)(PatchDiscriminator)
