"""Moving a model to another app without touching its table.

The move itself is `migrations.SeparateDatabaseAndState` with state operations only: a
CreateModel in the new app (after the old app's last migration of the model) and a DeleteModel
in the old app (after the new app's CreateModel). `MoveContentTypes`, run in the new app, takes
the model's row in django_content_type along, so the permissions granted on it and the admin's
history of it stay with it; on a fresh database there is no row yet and it does nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, migrations, router, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


class MoveContentTypes(migrations.RunPython):
    def __init__(self, old_app: str, new_app: str, model_names: list[str]) -> None:
        self.old_app, self.new_app, self.model_names = old_app, new_app, model_names
        super().__init__(self.forward, self.backward)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return type(self).__qualname__, [self.old_app, self.new_app, self.model_names], {}

    def describe(self) -> str:
        return f"Move the content types of {', '.join(self.model_names)} from {self.old_app} to {self.new_app}"

    def forward(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        self._move(apps, schema_editor, self.old_app, self.new_app)

    def backward(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        self._move(apps, schema_editor, self.new_app, self.old_app)

    def _move(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor, source: str, target: str) -> None:
        content_type = apps.get_model("contenttypes", "ContentType")
        db = schema_editor.connection.alias
        if not router.allow_migrate_model(db, content_type):
            return
        for name in self.model_names:
            try:
                with transaction.atomic(using=db):
                    content_type.objects.using(db).filter(app_label=source, model=name).update(app_label=target)
            except IntegrityError:
                # The new app already has one (a `migrate` of part of the plan ran post_migrate
                # in between): the old row is stale, for remove_stale_contenttypes to offer.
                pass
        content_type.objects.clear_cache()
