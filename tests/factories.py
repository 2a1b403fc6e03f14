import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts.roles import roles_sync

PASSWORD = "correct horse battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs) -> None:
        self.save()
        if extracted:
            if not Group.objects.filter(name=extracted).exists():
                roles_sync()
            self.groups.add(Group.objects.get(name=extracted))
