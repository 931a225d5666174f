class Model:
    def load(self, model_dir):
        pass
