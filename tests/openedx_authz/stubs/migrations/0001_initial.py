from django.db import migrations, models
from opaque_keys.edx.django.models import CourseKeyField


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="CourseOverview",
            fields=[("id", CourseKeyField(max_length=255, primary_key=True, serialize=False))],
        ),
        migrations.CreateModel(
            name="ContentLibrary",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("org", models.CharField(max_length=255)),
                ("slug", models.SlugField(max_length=255)),
            ],
        ),
    ]
