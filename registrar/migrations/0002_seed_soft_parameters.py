from django.db import migrations


def seed(apps, schema_editor):
    from registrar.softparams import CATALOGUE

    SoftParameter = apps.get_model("registrar", "SoftParameter")
    existing = set(SoftParameter.objects.values_list("number", flat=True))
    SoftParameter.objects.bulk_create([
        SoftParameter(number=spec.number, name=spec.name, kind=spec.kind, value=spec.default, default=spec.default,
                      minimum=spec.minimum, maximum=spec.maximum, description=spec.description)
        for spec in CATALOGUE if spec.number not in existing
    ])


class Migration(migrations.Migration):
    dependencies = [("registrar", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
