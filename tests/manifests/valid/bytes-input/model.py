class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return {"y": [len(b) for b in inputs["image"]]}
