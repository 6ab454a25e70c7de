from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "privacy"
    verbose_name = "Privacy: erasure and export"

    def ready(self) -> None:
        from privacy.holdings import EXPORTS
        from supworker.user_data import hold_user_data

        hold_user_data(EXPORTS)  # an erased user's exports go with them
